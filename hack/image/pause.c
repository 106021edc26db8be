/* The pod sandbox's process (what registry.k8s.io/pause is): it holds the pod's
 * namespaces, reaps orphaned children, and exits on SIGTERM or SIGINT. Built static by
 * hack/image.sh, so its image needs nothing else. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, 0, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction term = {.sa_handler = quit};
  struct sigaction child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGINT, &term, 0);
  sigaction(SIGTERM, &term, 0);
  sigaction(SIGCHLD, &child, 0);
  for (;;) pause();
}
