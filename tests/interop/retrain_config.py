#!/usr/bin/env python3
"""A QAT config for `make interop`: the trainer sections of TRAINER (its model, init and checkpoint
sections dropped, so that the command line names them) followed by the layer rules that
`qat create-config` wrote to RULES; written to OUTPUT.

    retrain_config.py TRAINER RULES OUTPUT
"""
import json
import sys

trainer, rules, output = sys.argv[1:4]
merged = json.load(open(trainer))
for section in ("model", "checkpoint"):
    merged.pop(section, None)
merged.update(json.load(open(rules)))
with open(output, "w") as f:
    json.dump(merged, f, indent=2)
    f.write("\n")
