"""What intake's workers get injected: the chain policy, the clock, the customer-reference
key and the service's config. The database is shared.persistence.db.Database."""
from dataclasses import dataclass

from nameko.extensions import DependencyProvider

from shared.runtime import provider as runtime


@dataclass(frozen=True)
class Runtime:
    policy: object
    clock: object
    ref_key: bytes
    config: dict

    def now(self):
        return self.clock.now()


class IntakeRuntime(DependencyProvider):
    def setup(self):
        config = self.container.config
        self.runtime = Runtime(policy=runtime.policy(config.get("POLICY_FILE")), clock=runtime.clock(config),
                               ref_key=runtime.customer_ref_key(config), config=config)
        runtime.verifier(config.get("POLICY_FILE"))  # missing keys fail the start, not a request

    def get_dependency(self, worker_ctx):
        return self.runtime
