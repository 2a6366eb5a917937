-- A step's vendor wait (common.v1.StepResult.vendor_wait): the time its tool calls spent awaiting the vendor
-- between start_time and end_time, in milliseconds; NULL for steps that made no call (and rows from before).
ALTER TABLE steps ADD COLUMN vendor_wait_ms double precision;
