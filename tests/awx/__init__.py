"""Tests of the AWX side of the project: awx/job_templates.yml, playbooks/awx.yml and the
execution environment (execution-environment.yml). `definitions` reads the job templates for
these tests and for the lab's job test (a template's playbook run through ansible-runner)."""
