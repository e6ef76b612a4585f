// Command pstest serves Google's in-memory Pub/Sub fake (cloud.google.com/go/pubsub/v2/pstest)
// over gRPC, for machines without the Cloud SDK's emulator. hack/build-pstest.sh builds it;
// clients reach it through PUBSUB_EMULATOR_HOST like the real emulator.
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8085", "host:port to listen on")
	flag.Parse()
	srv := pstest.NewServerWithAddress(*addr)
	log.Printf("pstest listening on %s", srv.Addr)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	if err := srv.Close(); err != nil {
		log.Fatal(err)
	}
}
