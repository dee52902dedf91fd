select cycle('w' || :client_id, true);
