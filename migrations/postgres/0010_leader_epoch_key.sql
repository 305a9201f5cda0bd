-- The epoch becomes a key column of the leader row, so that a decision can
-- fence with FOR KEY SHARE (see store::ledger's `fence`): a change of the
-- epoch (a new leader) then waits for every decision in flight, while the
-- leader's heartbeat, which changes no key column, does not wait for any.
-- The table holds one row, so the constraint always holds.
ALTER TABLE leader ADD CONSTRAINT leader_epoch_key UNIQUE (epoch);
