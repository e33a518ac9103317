-- Nexmark q4, average price per category (nexmark/nexmark nexmark-flink q4.sql): the winning bid of every
-- auction (its highest among the bids made while it was open), averaged per category. Both aggregates
-- update as bids arrive: the inner one's maxima are retracted from the outer average (a retract stream).
-- The datagen auctions' `expires` is, like `dateTime`, the time the row is generated, so few bids fall inside
-- an auction's lifetime here: Flink's join does the work of the query, its aggregates less than Sluice's.
-- include: tables/auction.sql
-- include: tables/bid.sql

CREATE TABLE nexmark_q4 (
  id    BIGINT,
  final BIGINT
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q4
SELECT
    Q.category,
    AVG(Q.final)
FROM (
    SELECT MAX(B.price) AS final, A.category
    FROM auction A, bid B
    WHERE A.id = B.auction AND B.`dateTime` BETWEEN A.`dateTime` AND A.expires
    GROUP BY A.id, A.category
) Q
GROUP BY Q.category;
