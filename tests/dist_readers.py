"""Run under torchrun: every rank reads with 2 DataLoader workers through medllm's reader assignment and reports the
documents each reader saw (rank 0 gathers them over gloo and writes JSON). Used by test_data_distributed.py."""
import json
import sys

import torch.distributed as dist
from torch.utils.data import DataLoader

from medllm.core import dist_info
from medllm.mixing import mixed_pieces
from medllm.packing import DataConfig, Pipeline, TokenRows


class ReaderDocuments(TokenRows):
    "TokenRows whose readers report (reader, doc_id) for every document they read, instead of packed rows."
    def __iter__(self):
        reader, n_readers, _, _ = self.reader()
        p = Pipeline(self.cfg)
        for piece in mixed_pieces(p.entries, p.tok, self.cfg.row_len, self.cfg.seed, reader, n_readers, split="all",
                                  epoch_policy="drop"):
            if piece.doc_start: yield f"{reader}|{n_readers}|{piece.doc_id}"


def main(spec: str, out: str):
    dist.init_process_group("gloo")
    info = dist_info()
    ds = ReaderDocuments(DataConfig(datasets=spec, seq_len=256, val_fraction=0.0), rank=info.rank, world_size=info.world_size)
    seen = list(DataLoader(ds, batch_size=None, num_workers=2))
    gathered = [None] * info.world_size
    dist.all_gather_object(gathered, seen)
    if info.rank == 0:
        with open(out, "w") as f: json.dump({"backend": dist.get_backend(), "world_size": info.world_size, "seen": gathered}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
