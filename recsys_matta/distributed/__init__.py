"""Process context and engines: where the models live and how a training step runs.

`context` (rank / world size / device), `engine` (the `Engine` interface and the run's models),
`sharded` (the engine: TorchRec DistributedModelParallel at any world size), `factory`
(`make_engine`), `planning` (the sharding planner),
`state` (world-size-independent checkpoints of sharded models). Sharding is layered on top of the
plain modules in recsys_matta.models, as in torchrec's modules/ vs distributed/.
"""
