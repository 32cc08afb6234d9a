// The sandbox process of the harness node's Pods (standard library only): see main.go.
module storeops.local/harness/pause

go 1.26.0
