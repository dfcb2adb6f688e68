module goscope.test/inline

go 1.19
