"""Logistic regression on MNIST with minibatch SGD and early stopping, in numpy.

A float32 numpy implementation of the protocol that `wgpu-learn train` runs,
kept as the reference for BENCHMARKS.md: same defaults (learning rate 0.13,
batch size 600, patience 5000, patience increase 2, improvement threshold
0.995), same iteration counting and stopping rule, and the same output lines.

Usage:
    python3 benches/reference/numpy_logistic.py [--drop-last] [--data DIR] [--repeat N]

DIR holds the four MNIST IDX files (default: data/mnist of this repository).
Features are pixel / 256 as float32 with train = the first 50000 training
images and validation = the last 10000, as in the classic mnist.pkl.gz.
Training time excludes loading, and is reported per repetition.
"""

import argparse
import gzip
import os
import struct
import sys
import time

import numpy as np


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(directory):
    def path(stem):
        plain = os.path.join(directory, stem)
        return plain if os.path.exists(plain) else plain + ".gz"

    train_x = read_idx(path("train-images-idx3-ubyte")).reshape(60000, -1)
    train_y = read_idx(path("train-labels-idx1-ubyte")).astype(np.int64)
    test_x = read_idx(path("t10k-images-idx3-ubyte")).reshape(10000, -1)
    test_y = read_idx(path("t10k-labels-idx1-ubyte")).astype(np.int64)
    scale = np.float32(1.0 / 256.0)
    train_x = train_x.astype(np.float32) * scale
    test_x = test_x.astype(np.float32) * scale
    return (
        (train_x[:50000], train_y[:50000]),
        (train_x[50000:], train_y[50000:]),
        (test_x, test_y),
    )


def batches(rows, size, drop_last):
    starts = range(0, rows, size)
    return [(s, min(s + size, rows)) for s in starts if not drop_last or s + size <= rows]


def error_rate(w, b, x, y, ranges):
    errors = 0
    count = 0
    for start, end in ranges:
        predicted = np.argmax(x[start:end] @ w + b, axis=1)
        errors += int(np.count_nonzero(predicted != y[start:end]))
        count += end - start
    return errors / count


def train(data, drop_last, quiet):
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = data
    learning_rate = np.float32(0.13)
    batch_size = 600
    n_epochs = 1000
    patience = 5000
    patience_increase = 2
    improvement_threshold = 0.995

    train_ranges = batches(len(train_y), batch_size, drop_last)
    valid_ranges = batches(len(valid_y), batch_size, drop_last)
    test_ranges = batches(len(test_y), batch_size, drop_last)
    n_batches = len(train_ranges)
    validation_frequency = min(n_batches, patience // 2)

    classes = int(max(train_y.max(), valid_y.max(), test_y.max())) + 1
    w = np.zeros((train_x.shape[1], classes), dtype=np.float32)
    b = np.zeros(classes, dtype=np.float32)
    onehot = np.eye(classes, dtype=np.float32)

    best_validation = np.inf
    test_score = 0.0
    epoch = 0
    done = False
    started = time.perf_counter()
    while epoch < n_epochs and not done:
        epoch += 1
        for index, (start, end) in enumerate(train_ranges):
            x = train_x[start:end]
            logits = x @ w + b
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            grad = (p - onehot[train_y[start:end]]) * np.float32(1.0 / (end - start))
            w -= learning_rate * (x.T @ grad)
            b -= learning_rate * grad.sum(axis=0)

            iteration = (epoch - 1) * n_batches + index
            if (iteration + 1) % validation_frequency == 0:
                loss = error_rate(w, b, valid_x, valid_y, valid_ranges)
                if not quiet:
                    print(
                        "epoch %i, minibatch %i/%i, validation error %f %%"
                        % (epoch, index + 1, n_batches, loss * 100.0)
                    )
                if loss < best_validation:
                    if loss < best_validation * improvement_threshold:
                        patience = max(patience, iteration * patience_increase)
                    best_validation = loss
                    test_score = error_rate(w, b, test_x, test_y, test_ranges)
                    if not quiet:
                        print(
                            "     epoch %i, minibatch %i/%i, test error of best model %f %%"
                            % (epoch, index + 1, n_batches, test_score * 100.0)
                        )
            if patience <= iteration:
                done = True
                break
    seconds = time.perf_counter() - started
    print(
        "best validation error %f %%, test error %f %%, %d epochs, %.3f s, %.2f epochs/s"
        % (best_validation * 100.0, test_score * 100.0, epoch, seconds, epoch / seconds)
    )
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--data", default=os.path.join(here, "..", "..", "data", "mnist"))
    parser.add_argument("--drop-last", action="store_true", help="drop incomplete minibatches")
    parser.add_argument("--repeat", type=int, default=1, help="training runs to time")
    args = parser.parse_args()
    data = load(args.data)
    times = [train(data, args.drop_last, quiet=run > 0) for run in range(args.repeat)]
    times.sort()
    print(
        "numpy %s: min %.3f s, median %.3f s over %d runs"
        % (np.__version__, times[0], times[len(times) // 2], len(times)),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
