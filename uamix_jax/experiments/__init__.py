"""Experiments that chain the jobs (pretrain, tune) and the evaluations into one command."""
