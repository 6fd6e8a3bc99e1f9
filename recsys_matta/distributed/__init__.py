"""Process context and engines: where the models live and how a training step runs.

`context` (rank / world size / device), `engine` (the `Engine` interface, the local engine and
`make_engine`), `sharded` (TorchRec DistributedModelParallel), `planning` (the sharding planner),
`state` (world-size-independent checkpoints of sharded models). Sharding is layered on top of the
plain modules in recsys_matta.models, as in torchrec's modules/ vs distributed/.
"""
