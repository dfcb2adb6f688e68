module goscope.bench/workloads

go 1.22
