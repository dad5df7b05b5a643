"""Provider mode: tenants own domains; users and API tokens belong to a tenant with a role.

``scope`` is the view a reader gets (everything, or one tenant's domains); ``registry``
keeps tenants and their domains; ``accounts`` keeps users and tokens and checks logins.
A deployment where no tenant was ever added is the single-tenant set-up: everything is
accepted as the ``domains`` setting says and every login sees everything.
"""
