//! Process truth. (Spawning, process groups, probes and restart policies arrive with the lifecycle work.)

pub mod proc_info;
