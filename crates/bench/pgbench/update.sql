select cycle('w' || :client_id, false);
