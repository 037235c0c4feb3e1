"""A tiny Ray job for the multi-cluster tests: proves which cluster it ran on, optionally fails or lingers."""

import argparse
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--tag", required=True)
parser.add_argument("--exit_code", type=int, default=0)
parser.add_argument("--sleep_s", type=float, default=0.0)
args = parser.parse_args()
time.sleep(args.sleep_s)
print(f"probe tag={args.tag} gcs={os.environ.get('RAY_ADDRESS')} env={os.environ.get('PROBE_ENV', '-')}", flush=True)
sys.exit(args.exit_code)
