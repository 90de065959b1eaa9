//! Reader for the IDX format of MNIST and Fashion-MNIST.
