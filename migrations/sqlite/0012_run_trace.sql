-- The W3C trace context (`traceparent`) of the request that created a run, so that each of its jobs' spans
-- continue that trace wherever a worker picks them up. Null when the creating process exported no spans.
alter table runs add column traceparent text;
