-- The Nexmark person and auction streams from Flink's `datagen` (Flink bundles no Nexmark generator): the
-- columns of nexmark/nexmark's ddl_gen.sql with string sizes near the generator's averages (a person ~200
-- bytes, an auction ~500), as many persons and auctions as ${EVENTS} Nexmark events hold (1 and 3 in 50:
-- ${PERSON_ROWS}, ${AUCTION_ROWS}, substituted by scripts/nexmark/flink_bench.py), person ids a sequence from
-- 1000, sellers uniform over them, categories uniform over the generator's five (10-14), states a random
-- two-letter code among the generator's six (AZ, CA, ID, OR, WA, WY: a sequence over 0-5 mapped by CASE),
-- and `dateTime` = the time the row is generated, with Nexmark's watermark 4 s behind it.
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
