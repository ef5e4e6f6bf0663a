// Command kube is kube-apiserver, kube-controller-manager and kube-scheduler from
// k8s.io/kubernetes in one binary: it runs the component named by the file it was
// started as (a symlink or copy named kube-apiserver, kube-controller-manager or
// kube-scheduler), the way k8s.io/kubernetes/cmd/<component>/<component>.go at
// v1.34.2 does for one component each. Run each component as its own process.
//
// Example:
//
//	ln -s kube kube-apiserver && ./kube-apiserver --etcd-servers=http://127.0.0.1:2379 ...
package main

import (
	"fmt"
	"os"
	"path/filepath"
	_ "time/tzdata" // CronJob time zones, as cmd/kube-controller-manager does

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

var components = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
}

func main() {
	name := filepath.Base(os.Args[0])
	newCommand, ok := components[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "%s: start me as kube-apiserver, kube-controller-manager or kube-scheduler\n", name)
		os.Exit(2)
	}
	os.Exit(cli.Run(newCommand()))
}
