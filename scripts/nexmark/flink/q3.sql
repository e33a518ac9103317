-- Nexmark q3, local item suggestion (nexmark/nexmark nexmark-flink q3.sql): the auctions in category 10 of
-- sellers in Oregon, Idaho or California (a regular join: both inputs stay in state).
-- include: tables/person.sql
-- include: tables/auction.sql

CREATE TABLE nexmark_q3 (
  name  VARCHAR,
  city  VARCHAR,
  state VARCHAR,
  id    BIGINT
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q3
SELECT P.name, P.city, P.state, A.id
FROM auction AS A INNER JOIN person AS P on A.seller = P.id
WHERE A.category = 10 and (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA');
