"""Deployment on partner sites: the SuperLink and SuperNode launcher, their processes, the worker, certificates."""
