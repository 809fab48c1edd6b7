"""Hydra discovers sweeper plugins in the `hydra_plugins` namespace; the logic lives in
`seqbench.sweep`, this package only adapts it to Hydra's Sweeper interface."""
