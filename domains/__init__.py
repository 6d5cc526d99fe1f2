"""Domain packages (one per vertical); each registers its scenarios with flcore by entry point."""
