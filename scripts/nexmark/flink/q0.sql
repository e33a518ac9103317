-- Nexmark q0, pass-through (nexmark/nexmark nexmark-flink q0.sql): every bid, unchanged.
-- include: tables/bid.sql

CREATE TABLE nexmark_q0 (
  auction    BIGINT,
  bidder     BIGINT,
  price      BIGINT,
  `dateTime` TIMESTAMP(3),
  extra      VARCHAR
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q0
SELECT auction, bidder, price, `dateTime`, extra FROM bid;
