"""The online (daily) loop above the engines: `trainer.OnlineTrainer` keeps the day policy
(check, evaluate, train, checkpoint each day in order) and reaches the models through
`recsys_matta.distributed.factory.make_engine` only.

Layers, each importing only those below it:
    jobs/ (CLI jobs) -> online/ (day policy) -> distributed/ (engines) -> train/ (step, loss,
    optimizers, checkpoints) -> models/, data/, specs/
"""
