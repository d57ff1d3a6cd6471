"""What a run leaves on disk.

Owns: the run directory's paths and atomic writes (`directory`), metrics.jsonl,
TensorBoard scalars and the curves plot (`metrics`), training checkpoints: their layout on
disk, atomic commit, verification, fallback and listing (`checkpoints`, plain file
handling), where a rank's pieces sit in the global tensors (`chunks`, plain integers), and
what each rank writes into one and reads back from one, resharded, with
torch.distributed.checkpoint (`rank_state`).

May import: `runtime.engine` (rank state), torch (and torch.distributed.checkpoint), the
standard library. Plain file handling (`directory`, `checkpoints`, `chunks`) imports no
torch.
"""
