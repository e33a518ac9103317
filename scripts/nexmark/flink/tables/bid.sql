-- The Nexmark bid stream from Flink's `datagen` (Flink bundles no Nexmark generator): the bid columns of
-- nexmark/nexmark's ddl_gen.sql with the generator's sizes (channel 8, url 60, extra 68 characters: a bid of
-- ~100 bytes), keys uniform over as many bidders and auctions as the Nexmark events the ROWS bids are 92 % of
-- would create (${BIDDER_MAX}, ${AUCTION_MAX}: substituted by scripts/nexmark/flink_bench.py; the generator's
-- hot keys are not modelled), and `dateTime` = the time the row is generated (datagen's max-past 0), with
-- Nexmark's watermark 4 s behind it.
CREATE TABLE bid (
  auction    BIGINT,
  bidder     BIGINT,
  price      BIGINT,
  channel    VARCHAR,
  url        VARCHAR,
  `dateTime` TIMESTAMP(3),
  extra      VARCHAR,
  WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
) WITH (
  'connector'            = 'datagen',
  'number-of-rows'       = '${ROWS}',
  'rows-per-second'      = '1000000000',
  'fields.auction.min'   = '1000',
  'fields.auction.max'   = '${AUCTION_MAX}',
  'fields.bidder.min'    = '1000',
  'fields.bidder.max'    = '${BIDDER_MAX}',
  'fields.price.min'     = '100',
  'fields.price.max'     = '99999999',
  'fields.channel.length' = '8',
  'fields.url.length'    = '60',
  'fields.extra.length'  = '68'
);
