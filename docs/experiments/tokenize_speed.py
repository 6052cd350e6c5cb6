"""The tokenize stage alone, this version against an older commit's, on real documents.

    PYTHONPATH=. python docs/experiments/tokenize_speed.py OLD_COMMIT TOKENIZER_DIR \
        ../shared/data/ncbi_disease/train_docs.parquet ../shared/data/mtsamples/mtsamples.parquet

Seven alternating calls each over the first 600 distinct texts of every file; prints the
minimum and median per version and checks that both give the same columns.
"""

import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schemas as S
from pipeline.stages.tokenize import Tokenize

old_commit, tokenizer_dir, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
source = subprocess.run(
    ["git", "show", f"{old_commit}:pipeline/stages/tokenize.py"],
    capture_output=True,
    text=True,
    check=True,
).stdout
old_module: dict = {}
exec(compile(source, f"{old_commit}:tokenize.py", "exec"), old_module)
old_stage = old_module["Tokenize"]("ner", tokenizer_dir)  # role, model folder then
new_stage = Tokenize.of_model("ner", tokenizer_dir)

for path in paths:
    texts = [t for t in dict.fromkeys(pq.read_table(path).column("text").to_pylist()) if t]
    texts = texts[:600]
    batch = pa.table({S.TEXT_INTERNAL: texts, S.STATUS_INTERNAL: [S.STATUS_OK] * len(texts)})
    times: dict[str, list[float]] = {"old": [], "new": []}
    outs = {}
    for _ in range(7):
        for name, stage in (("old", old_stage), ("new", new_stage)):
            t0 = time.perf_counter()
            outs[name] = stage(batch)
            times[name].append(time.perf_counter() - t0)
    assert outs["old"].equals(outs["new"]), "the two versions disagree"
    n_tokens = sum(map(len, outs["new"].column(S.tokens_column("ner", S.TOKEN_IDS)).to_pylist()))
    row = ", ".join(
        f"{k} min {min(v) * 1000:.0f} ms median {sorted(v)[3] * 1000:.0f} ms"
        for k, v in times.items()
    )
    print(f"{path.rsplit('/', 1)[-1]}: {len(texts)} docs, {n_tokens} tokens: {row}")
