#!/usr/bin/env python3
"""Counts the GPU tests that ran, from kvc_cuda_api_tests' gtest JSON output.

A GPU test is one of a suite whose name starts with "Gpu" (GpuBackend, Fixtures/GpuParity,
Fixtures/GpuPolicyParity). Whether a CUDA device is present is read from the properties that
CudaDevice.PresenceIsDetected records (tests/cuda/gpu_presence.h: the driver, not the backend).

  gpu_test_count.py RESULTS.json                       # count an existing run
  gpu_test_count.py --run kvc_cuda_api_tests RESULTS.json   # run the GPU tests, then count

Exit status: 0 when a device is present and every GPU test ran and passed; 1 when a device is
present and none ran, any was skipped or any failed (or the presence cannot be read); 77 (a
skip, for CTest) when there is no device: then "0 ran" is expected and the reason is printed.
"""
import argparse
import json
import os
import re
import subprocess
import sys

GPU_SUITE = re.compile(r"(^|/)Gpu")
PRESENCE_TEST = ("CudaDevice", "PresenceIsDetected")
SKIP = 77


def first_failure(failures):
    """'file.cpp:46: the message' from gtest's failure text (location, then the last line)."""
    lines = [l.strip() for l in failures[0].get("failure", "").splitlines() if l.strip()]
    if not lines:
        return ""
    return f"{os.path.basename(lines[0])}: {lines[-1]}" if len(lines) > 1 else lines[0]


def count(results):
    passed, skipped, failed, presence = [], [], [], None
    for suite in results.get("testsuites", []):
        for case in suite.get("testsuite", []):
            name = f"{suite['name']}.{case['name']}"
            if (suite["name"], case["name"]) == PRESENCE_TEST:
                presence = (case.get("cuda_device_present") == "1",
                            case.get("cuda_device_detail", "?"))
            if not GPU_SUITE.search(suite["name"]) or case.get("status") != "RUN":
                continue
            if case.get("failures"):
                failed.append((name, first_failure(case["failures"])))
            elif case.get("result") == "SKIPPED":
                skipped.append(name)
            else:
                passed.append(name)
    return passed, skipped, failed, presence


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", help="gtest JSON output (written first with --run)")
    ap.add_argument("--run", metavar="BINARY", help="run these GPU tests first")
    ap.add_argument("--failures", type=int, default=10, help="failures to print (first lines)")
    args = ap.parse_args()
    if args.run:
        # The presence test and every GPU suite; the selection tests run in their own CTest tests.
        proc = subprocess.run([args.run, "--gtest_filter=CudaDevice.*:*Gpu*",
                               f"--gtest_output=json:{args.json}", "--gtest_brief=1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode not in (0, 1):  # 1: some test failed; anything else: it crashed
            sys.stdout.write(proc.stdout[-4000:])
            print(f"gpu tests: {args.run} exited with status {proc.returncode}")
            return 1
    try:
        with open(args.json) as f:
            results = json.load(f)
    except (OSError, ValueError) as e:
        print(f"gpu tests: cannot read the results {args.json}: {e}")
        return 1
    passed, skipped, failed, presence = count(results)
    ran = len(passed) + len(failed)
    total = ran + len(skipped)
    if presence is None:
        print(f"gpu tests: {ran} ran of {total}, but {'.'.join(PRESENCE_TEST)} is not in "
              f"the results: cannot tell whether a CUDA device is present")
        return 1
    present, detail = presence
    line = (f"gpu tests: {ran} ran ({len(passed)} passed, {len(failed)} failed), "
            f"{len(skipped)} skipped, of {total}; CUDA device: "
            f"{'present' if present else 'absent'} ({detail})")
    if not present:
        print(f"{line}\ngpu tests: skipped, {ran} ran: {detail}")
        return SKIP
    print(line)
    for name, text in failed[: args.failures]:
        print(f"  FAILED {name}: {text}"[:220])
    if len(failed) > args.failures:
        print(f"  ... and {len(failed) - args.failures} more")
    for name in skipped[:5]:
        print(f"  SKIPPED with a device present: {name}")
    if not ran:
        print("gpu tests: FAILED: a CUDA device is present and no GPU test ran")
        return 1
    if skipped or failed:
        print("gpu tests: FAILED")
        return 1
    print("gpu tests: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
