"""Federation on Flower: message contract, ServerApp and ClientApp, mods, strategies, rounds, checkpoints, engines."""
