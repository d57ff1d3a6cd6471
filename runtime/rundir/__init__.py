"""What a run leaves on disk.

Owns: the run directory's paths and atomic writes (`directory`), metrics.jsonl,
TensorBoard scalars and the curves plot (`metrics`), training checkpoints: their layout on
disk, atomic commit, verification and fallback (`checkpoints`, plain file handling), and
what each rank puts in one (`rank_state`).

May import: `runtime.engine` (rank state), torch, the standard library. Plain file handling
(`directory`, `checkpoints`) imports no torch.
"""
