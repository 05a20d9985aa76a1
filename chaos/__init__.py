"""`make chaos`: the suite under a seeded mixed workload and a nemesis, then every invariant.

The shape, in the order a run goes through it:

- `workload`: several concurrent clients drive every kind of payment through the public gRPC
  API and the HTTP facade, and record every request and answer (`history.Call`);
- `nemesis`: kills, pauses, database and provider faults on a seeded schedule (`history.Fault`);
- `observe`: after the faults stop and a recovery window passes, the final state read from
  outside (public RPCs) and inside (the databases, Redis, the simulators, ledger verify);
- `checker`: a pure function of the recorded history and the observed state, so tests feed it
  doctored histories without any server;
- `report`: the tables, the fault timeline, JSON and a PNG.
"""
