"""A synthetic checkpoint as a GGUF file, for llama.cpp's server (docs/serving.md, "llama.cpp").

Runs llama.cpp's own convert_hf_to_gguf.py on the checkpoint llem-bench builds (same weights, same
tokenizer), and writes `<checkpoint dir>-<outtype>.gguf` next to it, so a study can start the server
with `-m {model}-f32.gguf` ({model} is the checkpoint dir):

    python tools/synthetic_gguf.py /path/to/llama.cpp [--model synthetic:tiny] [--outtype f32]

The converter knows BPE tokenizers by a hash of how they split a test string, and the synthetic
tokenizer (workload/synthetic.py: byte-level BPE trained on the built-in prompts) is in no list, so
it stops with "BPE pre-tokenizer was not recognized". Its pre-tokenizer is HF's ByteLevel with the
default regex, which is GPT-2's: for an unrecognised hash this names it "gpt-2" and nothing else.
Prompts go to the server as token ids anyway, so the pre-tokenizer only matters for text prompts.

The Llama converter tries a SentencePiece vocabulary first and imports sentencepiece to find out
there is none (no tokenizer.model); that answer is given here before the import, so the converter
needs only what llem-bench's venv has (torch, transformers, numpy) and llama.cpp's own gguf-py folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def gguf_path(checkpoint: Path, outtype: str) -> Path:
    return Path(f"{checkpoint}-{outtype}.gguf")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("llama_cpp", type=Path, help="llama.cpp source folder (has convert_hf_to_gguf.py)")
    parser.add_argument("--model", default="synthetic:tiny", help="a synthetic: model (default synthetic:tiny)")
    parser.add_argument("--outtype", default="f32",
                        help="converter --outtype: f32 (the tiny shape's dtype), f16, bf16, q8_0")
    args = parser.parse_args(argv)

    from llem_bench.workload.synthetic import ensure_checkpoint, is_synthetic

    if not is_synthetic(args.model):
        parser.error("--model: only synthetic: models (a real checkpoint converts with convert_hf_to_gguf.py as is)")
    converter = args.llama_cpp / "convert_hf_to_gguf.py"
    if not converter.is_file():
        parser.error(f"no convert_hf_to_gguf.py in {args.llama_cpp}")
    checkpoint = ensure_checkpoint(args.model)
    out = gguf_path(checkpoint, args.outtype)

    sys.path[:0] = [str(args.llama_cpp), str(args.llama_cpp / "gguf-py")]
    from conversion.base import TextModel  # llama.cpp's converter package

    recognised = TextModel.get_vocab_base_pre

    def pre_tokenizer(self, tokenizer) -> str:
        try:
            return recognised(self, tokenizer)
        except NotImplementedError:  # the synthetic tokenizer: GPT-2's byte-level split
            return "gpt-2"

    TextModel.get_vocab_base_pre = pre_tokenizer
    sentencepiece = TextModel._create_vocab_sentencepiece

    def no_sentencepiece(self):  # the converter's own answer, given before it imports sentencepiece
        if not (self.dir_model / "tokenizer.model").is_file():
            raise FileNotFoundError(f"File not found: {self.dir_model / 'tokenizer.model'}")
        return sentencepiece(self)

    TextModel._create_vocab_sentencepiece = no_sentencepiece
    import convert_hf_to_gguf

    sys.argv = [str(converter), str(checkpoint), "--outfile", str(out), "--outtype", args.outtype]
    convert_hf_to_gguf.main()
    print(out)
    return out


if __name__ == "__main__":
    main()
