-- Nexmark q2, selection (nexmark/nexmark nexmark-flink q2.sql): bids on every 123rd auction.
-- include: tables/bid.sql

CREATE TABLE nexmark_q2 (
  auction BIGINT,
  price   BIGINT
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q2
SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0;
