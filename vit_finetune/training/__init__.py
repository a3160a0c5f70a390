"""Training: one run of the HF Trainer from a validated `RunConfig` to a model folder.

`run` (the whole run: data, model, Trainer, test evaluation, run files), `model_setup` (the model and
preprocessing a run starts from), `trainer` (`ClassifierTrainer`: strict save and reload of our model,
non-finite-loss guard), `checkpoints` (which checkpoints are complete, resume, atomic publishing),
`metrics` (the accuracy metric), `tasks` (what `data.task` changes: head loss, metrics, model
selection), `signals` (SIGINT/SIGTERM save and stop), `lock` (one run per output folder), `curves`
(the training-curves figure). Only the command lines import it (and, from outside the
package, the repository's `benchmarks/`): evaluation and prediction read a run's files through
`run_files` and `loading`.
"""
