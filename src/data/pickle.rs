//! Reader for the classic `mnist.pkl.gz`.
