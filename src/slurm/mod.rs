//! Talking to SLURM through slurmrestd.

pub mod jwt;
