// Command apiprobe GETs a path from the Kubernetes API server the way an in-cluster client does:
// it reads the Pod's ServiceAccount token and the cluster CA from the mounted service account
// volume, dials https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, verifies the server's
// certificate against that CA and prints the status line and body. Exit status 0 only for 2xx.
//
// Usage: apiprobe [path]   (default /api)
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

const accountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	path := "/api"
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	if err := run(path); err != nil {
		fmt.Fprintln(os.Stderr, "apiprobe:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	token, err := os.ReadFile(accountDir + "/token")
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(accountDir + "/ca.crt")
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("no certificate in %s/ca.crt", accountDir)
	}
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return fmt.Errorf("KUBERNETES_SERVICE_HOST/PORT are not set")
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	request, err := http.NewRequest(http.MethodGet, "https://"+net.JoinHostPort(host, port)+path, nil)
	if err != nil {
		return err
	}
	request.Header.Set("Authorization", "Bearer "+string(token))
	response, err := client.Do(request)
	if err != nil {
		return err
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		return err
	}
	fmt.Println(response.Status)
	fmt.Println(string(body))
	if response.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered %s", path, response.Status)
	}
	return nil
}
