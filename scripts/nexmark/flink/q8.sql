-- Nexmark q8, monitor new users (nexmark/nexmark nexmark-flink q8.sql): persons who registered and opened
-- an auction within the same 10 s tumbling window.
-- The Nexmark person and auction streams from Flink's `datagen` (Flink bundles no Nexmark generator): the
-- columns of nexmark/nexmark's ddl_gen.sql with string sizes near the generator's averages (a person ~200
-- bytes, an auction ~500), as many persons and auctions as ${EVENTS} Nexmark events hold (1 and 3 in 50:
-- ${PERSON_ROWS}, ${AUCTION_ROWS}, substituted by scripts/nexmark/flink_bench.py), person ids a sequence from
-- 1000, sellers uniform over them (the generator's preference for recent persons as sellers is not
-- modelled), and `dateTime` = the time the row is generated, with Nexmark's watermark 4 s behind it.
CREATE TABLE person (
  id           BIGINT,
  name         VARCHAR,
  emailAddress VARCHAR,
  creditCard   VARCHAR,
  city         VARCHAR,
  state        VARCHAR,
  `dateTime`   TIMESTAMP(3),
  extra        VARCHAR,
  WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
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
  'fields.state.length'      = '2',
  'fields.extra.length'      = '120'
);

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
  extra       VARCHAR,
  WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
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

CREATE TABLE nexmark_q8 (
  id        BIGINT,
  name      VARCHAR,
  starttime TIMESTAMP(3)
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q8
SELECT P.id, P.name, P.starttime
FROM (
  SELECT id, name,
         window_start AS starttime,
         window_end AS endtime
  FROM TABLE(
     TUMBLE(TABLE person, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
  GROUP BY id, name, window_start, window_end
) P
JOIN (
  SELECT seller,
         window_start AS starttime,
         window_end AS endtime
  FROM TABLE(
     TUMBLE(TABLE auction, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
  GROUP BY seller, window_start, window_end
) A
ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime;
