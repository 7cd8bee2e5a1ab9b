from shared.persistence.migrations_env import run

run()
