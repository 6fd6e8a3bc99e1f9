"""The Teacher stage: fit a Teacher on event labels (`matta teacher fit`) and write its soft
labels into new partitions (`matta teacher score`), for data that has no Teacher column."""
