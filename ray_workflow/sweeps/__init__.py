"""Sweeps: hyperparameter tuning of training commands with Ray Tune.

A sweep config (``hyper_parameter_tuning/config/*.py``) defines a ``Sweep`` (``sweep.py``) over a
``TrainingJob`` (``training_command.py``) and runs ``cli.main``; ``tuning.py`` wires it to Ray Tune's
searchers and schedulers, ``trainable.py`` runs each trial's trainer and reports its TensorBoard
metrics (``tensorboard_metrics.py``), ``warm_slot.py`` forks trainers from an interpreter that has
imported them already, and ``report.py`` writes the table, CSV and plot.
"""
