module example.com/goscopefixture

go 1.19
