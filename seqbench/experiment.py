"""What makes two runs the same experiment.

A module of its own, with no imports, because both sides need it: the sweep (which skips
finished jobs), the trainer (which resumes only its own checkpoint) and the report
(which groups runs into cells) -- and the report must not import torch, which
seqbench.config does (~2 s at start and ~1 s at exit of a report).
"""

# Config keys that change where or how a run executes, not what it measures: runs that
# differ only in these are the same experiment (one report cell, one finished sweep job).
NON_EXPERIMENT_KEYS = ("trainer.progress", "trainer.device", "trainer.threads",
                       "trainer.log_every", "trainer.checkpoint_every", "trainer.resume",
                       "trainer.tensorboard")
