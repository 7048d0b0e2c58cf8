#!/usr/bin/env bash
# The embedded default job: train LeNet-5 on Fashion-MNIST with the shipped config.
set -euo pipefail
cd "$(dirname "$0")/.."
QAT=.build/release/qat
$QAT train --config Configs/float.json --epochs 2 --output /tmp/qat-demo-float.h5
