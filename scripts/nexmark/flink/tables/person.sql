-- The Nexmark person stream (see auction.sql for the sizes and counts); `state` one of the generator's six,
-- from a generated 0-5 code.
CREATE TABLE person_gen (
  id           BIGINT,
  name         VARCHAR,
  emailAddress VARCHAR,
  creditCard   VARCHAR,
  city         VARCHAR,
  state_code   INT,
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
