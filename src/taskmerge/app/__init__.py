"""The entry points: the only package that reads a Hydra config. One recipe per entry point
(:mod:`.merge`, :mod:`.finetune`, :mod:`.analyze`, :mod:`.import_checkpoints`, :mod:`.prepare`,
:mod:`.report`, :mod:`.merge_cli`), the workspace they share (:mod:`.workspace`), the command-line
checks (:mod:`.command_line`) and the one-line user errors (:mod:`.errors`)."""
