//! The classic MNIST splits from IDX files or the pickle.
