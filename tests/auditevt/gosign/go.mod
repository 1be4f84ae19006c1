module gosign

go 1.22
