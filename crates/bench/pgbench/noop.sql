select noop_cycle('w' || :client_id);
