"""Studies: a run directory filled by a list of phases (pretrain to an epoch, evaluate, finetune, ...)."""
