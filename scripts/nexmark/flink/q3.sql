-- Nexmark q3, local item suggestion (nexmark/nexmark nexmark-flink q3.sql): the auctions in category 10 of
-- sellers in Oregon, Idaho or California (a regular join: both inputs stay in state).
-- The Nexmark person and auction streams from Flink's `datagen` (Flink bundles no Nexmark generator): the
-- columns of nexmark/nexmark's ddl_gen.sql with string sizes near the generator's averages (a person ~200
-- bytes, an auction ~500), as many persons and auctions as ${EVENTS} Nexmark events hold (1 and 3 in 50:
-- ${PERSON_ROWS}, ${AUCTION_ROWS}, substituted by scripts/nexmark/flink_bench.py), person ids a sequence from
-- 1000, sellers uniform over them, categories uniform over the generator's five (10-14), states a random
-- two-letter code among the generator's six (AZ, CA, ID, OR, WA, WY: a sequence over 0-5 mapped by CASE),
-- and `dateTime` = the time the row is generated.
CREATE TABLE person_gen (
  id           BIGINT,
  name         VARCHAR,
  emailAddress VARCHAR,
  creditCard   VARCHAR,
  city         VARCHAR,
  state_code   INT,
  `dateTime`   TIMESTAMP(3),
  extra        VARCHAR
) WITH (
  'connector'                = 'datagen',
  'number-of-rows'           = '${PERSON_ROWS}',
  'rows-per-second'          = '1000000000',
  'fields.id.kind'           = 'sequence',
  'fields.id.start'          = '1000',
  'fields.id.end'            = '${PERSON_MAX}',
  'fields.name.length'       = '14',
  'fields.emailAddress.length' = '18',
  'fields.creditCard.length' = '19',
  'fields.city.length'       = '8',
  'fields.state_code.min'    = '0',
  'fields.state_code.max'    = '5',
  'fields.extra.length'      = '120'
);

CREATE TEMPORARY VIEW person AS
SELECT id, name, emailAddress, creditCard, city,
       CASE state_code WHEN 0 THEN 'AZ' WHEN 1 THEN 'CA' WHEN 2 THEN 'ID' WHEN 3 THEN 'OR' WHEN 4 THEN 'WA'
                       ELSE 'WY' END AS state,
       `dateTime`, extra
FROM person_gen;

CREATE TABLE auction (
  id          BIGINT,
  itemName    VARCHAR,
  description VARCHAR,
  initialBid  BIGINT,
  reserve     BIGINT,
  `dateTime`  TIMESTAMP(3),
  expires     TIMESTAMP(3),
  seller      BIGINT,
  category    BIGINT,
  extra       VARCHAR
) WITH (
  'connector'                 = 'datagen',
  'number-of-rows'            = '${AUCTION_ROWS}',
  'rows-per-second'           = '1000000000',
  'fields.id.kind'            = 'sequence',
  'fields.id.start'           = '1000',
  'fields.id.end'             = '${AUCTION_MAX}',
  'fields.itemName.length'    = '20',
  'fields.description.length' = '100',
  'fields.initialBid.min'     = '100',
  'fields.initialBid.max'     = '10000000',
  'fields.reserve.min'        = '100',
  'fields.reserve.max'        = '20000000',
  'fields.seller.min'         = '1000',
  'fields.seller.max'         = '${PERSON_MAX}',
  'fields.category.min'       = '10',
  'fields.category.max'       = '14',
  'fields.extra.length'       = '320'
);

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
