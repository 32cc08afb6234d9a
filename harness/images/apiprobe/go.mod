// A client of the API server for test Pods on the harness node (standard library only): see main.go.
module storeops.local/harness/apiprobe

go 1.26.0
